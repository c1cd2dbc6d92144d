"""Built-in synthetic receipts for `--dataset demo[:N]`: seeded, offline, US-style.

Each receipt is first written as a list of lines, each a list of (text, label) tokens plus
where it sits (left, centred, or with a right-aligned price column); `_layout` then turns
those lines into word boxes on a page. Amounts are kept in integer cents so that the
printed totals always add up: GRAND_TOTAL = SUBTOTAL + TAX + TIP - DISCOUNT.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from .receipt import Receipt, Word

# Store kind -> (merchant names, product names, price range in cents).
STORES = {
    "grocery": (
        ["FRESH MART", "GREEN VALLEY MARKET", "SUNRISE GROCERY", "HARVEST FOODS", "CORNER MARKET"],
        [
            "BANANAS",
            "WHOLE MILK GAL",
            "LARGE EGGS DOZEN",
            "WHEAT BREAD",
            "CHEDDAR CHEESE",
            "GROUND BEEF",
            "ROMA TOMATOES",
            "ORANGE JUICE",
            "PEANUT BUTTER",
            "CHICKEN BREAST",
            "GREEK YOGURT",
            "BABY SPINACH",
            "PASTA PENNE",
            "CANNED TUNA",
            "COFFEE BEANS",
            "PAPER TOWELS",
            "ORGANIC FUJI APPLES",
        ],
        (59, 1299),
    ),
    "cafe": (
        ["BLUE BEAN CAFE", "DAILY GRIND", "MORNING BREW", "JAVA HOUSE"],
        [
            "LATTE",
            "ICED COFFEE",
            "CAPPUCCINO LG",
            "BLUEBERRY MUFFIN",
            "CROISSANT",
            "CHAI TEA LATTE",
            "BAGEL CREAM CHEESE",
            "HOT CHOCOLATE",
            "AVOCADO TOAST",
        ],
        (195, 895),
    ),
    "hardware": (
        ["HANDY HARDWARE", "BUILDRIGHT SUPPLY", "TOOL BARN"],
        [
            "WOOD SCREWS 2IN",
            "DUCT TAPE",
            "LED BULB 60W",
            "PAINT ROLLER",
            "CLAW HAMMER",
            "EXTENSION CORD 25FT",
            "SANDPAPER 120 GRIT",
            "WD-40 SPRAY",
            "PVC ELBOW 1/2IN",
            "WORK GLOVES",
        ],
        (149, 3499),
    ),
    "pharmacy": (
        ["CARE PHARMACY", "WELLNESS DRUG", "MAIN ST PHARMACY"],
        [
            "IBUPROFEN 200MG",
            "TOOTHPASTE",
            "COUGH SYRUP",
            "VITAMIN C",
            "BAND AIDS",
            "SHAMPOO",
            "HAND SANITIZER",
            "ALLERGY RELIEF 24CT",
            "COTTON SWABS",
        ],
        (199, 1899),
    ),
    "restaurant": (
        ["THE HUNGRY FOX", "GOLDEN DRAGON", "TACO FIESTA", "SMOKEHOUSE GRILL", "LUIGI'S TRATTORIA"],
        [
            "CHEESEBURGER",
            "CAESAR SALAD",
            "FISH TACOS",
            "KUNG PAO CHICKEN",
            "MARGHERITA PIZZA",
            "FRENCH FRIES",
            "ICED TEA",
            "SODA",
            "BBQ PULLED PORK",
            "SPAGHETTI BOLOGNESE",
        ],
        (250, 2499),
    ),
}
STREETS = ["MAIN", "OAK", "MAPLE", "PINE", "CEDAR", "ELM", "WASHINGTON", "LAKE", "HILL", "PARK", "SUNSET", "RIVER"]
SUFFIXES = ["ST", "AVE", "BLVD", "RD", "DR", "LN", "WAY", "Street", "Avenue"]
CITIES = [
    ("Springfield", "IL"),
    ("Austin", "TX"),
    ("Portland", "OR"),
    ("Columbus", "OH"),
    ("San Jose", "CA"),
    ("Denver", "CO"),
    ("Raleigh", "NC"),
    ("Tampa", "FL"),
    ("Madison", "WI"),
    ("Albany", "NY"),
]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
FOOTERS = ["THANK YOU", "PLEASE COME AGAIN", "THANK YOU FOR SHOPPING", "HAVE A NICE DAY", "RETAIN RECEIPT FOR RETURNS"]
CASHIERS = ["MARIA", "JOHN", "KEISHA", "DAVID", "LINDA", "CARLOS", "AMY"]


def generate_receipts(n: int, seed: int = 42) -> list[Receipt]:
    """`n` synthetic receipts; receipt i depends only on (seed, i), so smaller n gives a prefix."""
    # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and platforms.
    return [_receipt(random.Random(f"{seed}:{i}"), f"demo-{i + 1:05d}") for i in range(n)]


def _money(cents: int, dollar: bool) -> str:
    return ("$" if dollar else "") + f"{cents // 100}.{cents % 100:02d}"


def _tokens(text: str, label: str) -> list[tuple[str, str]]:
    return [(w, label) for w in text.split()]


def _receipt(rng: random.Random, rid: str) -> Receipt:
    kind = rng.choice(list(STORES))
    merchants, products, (lo, hi) = STORES[kind]
    dollar = rng.random() < 0.35  # per receipt: are prices printed with "$"?
    money = lambda c: _money(c, dollar)  # noqa: E731
    lines: list[tuple[list, list, str]] = []  # (left tokens, right tokens, "left" | "center")

    def add(left, right=(), align="left"):
        lines.append((list(left), list(right), align))

    # Header: merchant, address, phone, maybe website / hours -- usually centred.
    head = "center" if rng.random() < 0.8 else "left"
    name = rng.choice(merchants)
    store_no = [(f"#{rng.randint(1, 9999):04d}", "O")] if rng.random() < 0.3 else []
    add(_tokens(name, "MERCHANT_NAME") + store_no, align=head)
    add(_tokens(f"{rng.randint(1, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}", "ADDRESS_LINE"), align=head)
    if rng.random() < 0.85:
        city, state = rng.choice(CITIES)
        add(_tokens(f"{city}, {state} {rng.randint(10000, 99999)}", "ADDRESS_LINE"), align=head)
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    phone = rng.choice([f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}"])
    add(_tokens(rng.choice(["", "Tel:", "Phone:"]), "O") + _tokens(phone, "PHONE_NUMBER"), align=head)
    if rng.random() < 0.3:
        add(_tokens(f"www.{''.join(ch for ch in name.lower() if ch.isalnum())}.com", "WEBSITE"), align=head)
    if rng.random() < 0.2:
        hours = f"{rng.choice(['Mon-Sun', 'Daily', 'Mon-Sat'])} {rng.randint(6, 10)}AM-{rng.randint(8, 11)}PM"
        add(_tokens("Hours:", "O") + _tokens(hours, "STORE_HOURS"), align=head)

    # Date and time in one of several formats, same line or separate, with or without captions.
    d = date(2019, 1, 1) + timedelta(days=rng.randint(0, 7 * 365))
    day = rng.choice(
        [d.strftime("%m/%d/%Y"), d.strftime("%m/%d/%y"), d.isoformat(), f"{MONTHS[d.month - 1]} {d.day}, {d.year}"]
    )
    hh, mm = rng.randint(7, 22), rng.randint(0, 59)
    clock = f"{hh}:{mm:02d}" if rng.random() < 0.5 else f"{(hh - 1) % 12 + 1}:{mm:02d} {'AM' if hh < 12 else 'PM'}"
    date_toks, time_toks = _tokens(day, "DATE"), _tokens(clock, "TIME")
    if rng.random() < 0.5:
        add(date_toks, time_toks)  # date left, time right-aligned
    else:
        captions = rng.random() < 0.6
        add(_tokens("Date:" if captions else "", "O") + date_toks)
        add(_tokens("Time:" if captions else "", "O") + time_toks)
    staff = [
        f"Cashier: {rng.choice(CASHIERS)}",
        f"Reg {rng.randint(1, 12)} Trans {rng.randint(1000, 99999)}",
        f"Store {rng.randint(1, 999)} Term {rng.randint(1, 20):02d}",
    ]
    if kind == "restaurant":
        staff = [f"Server: {rng.choice(CASHIERS)} Table {rng.randint(1, 40)}", f"Check #{rng.randint(100, 9999)}"]
    add(_tokens(rng.choice(staff), "O"))

    # Items: name + line total, sometimes "qty name unit total", sometimes qty on its own line.
    subtotal = count = 0
    for _ in range(rng.randint(2, 15)):
        prod = _tokens(rng.choice(products), "PRODUCT_NAME")
        qty = rng.choice([1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 6])
        unit = rng.randint(lo, hi)
        total = qty * unit
        subtotal, count = subtotal + total, count + qty
        if qty == 1:
            add(prod, [(money(total), "LINE_TOTAL")])
        elif rng.random() < 0.5:
            add([(str(qty), "QUANTITY")] + prod + [(money(unit), "UNIT_PRICE")], [(money(total), "LINE_TOTAL")])
        else:  # two-line style: the name, then "2 @ 3.49   6.98" under it
            add(prod)
            add([(str(qty), "QUANTITY"), ("@", "O"), (money(unit), "UNIT_PRICE")], [(money(total), "LINE_TOTAL")])
    if rng.random() < 0.3:
        add(_tokens("ITEMS SOLD:", "O") + [(str(count), "O")])

    # Totals block: GRAND_TOTAL = SUBTOTAL + TAX + TIP - DISCOUNT, all in cents.
    add(_tokens(rng.choice(["SUBTOTAL", "Sub Total", "SUB-TOTAL", "Subtotal"]), "O"), [(money(subtotal), "SUBTOTAL")])
    discount = 0
    if rng.random() < 0.25:
        discount = min(subtotal // 2, rng.choice([100, 200, 300, 500, subtotal // 10]))
        if rng.random() < 0.5:  # a coupon names itself; a plain discount only has a caption
            caption = _tokens(rng.choice(["STORE COUPON", "MFR COUPON", "COUPON SAVE5"]), "COUPON")
        else:
            caption = _tokens(rng.choice(["DISCOUNT", "Member Savings", "PROMO DISCOUNT"]), "O")
        add(caption, [(rng.choice(["-", ""]) + money(discount), "DISCOUNT")])
    rate = rng.choice([0.0, 4.0, 5.5, 6.0, 6.25, 7.0, 7.25, 8.25, 8.875, 9.5, 10.0])
    tax = round((subtotal - discount) * rate / 100)
    add(_tokens(rng.choice(["TAX", "Tax", f"Sales Tax {rate:g}%", f"TAX {rate:g}%"]), "O"), [(money(tax), "TAX")])
    tip = 0
    if kind in ("cafe", "restaurant") and rng.random() < 0.5:
        tip = round(subtotal * rng.choice([0.15, 0.18, 0.20]))
        add(_tokens(rng.choice(["TIP", "Tip", "Gratuity"]), "O"), [(money(tip), "TIP")])
    grand = subtotal + tax + tip - discount
    total_caption = rng.choice(["TOTAL", "Total", "AMOUNT DUE", "BALANCE DUE", "TOTAL DUE"])
    add(_tokens(total_caption, "O"), [(money(grand), "GRAND_TOTAL")])

    # Payment: masked card, or cash tendered with change.
    if rng.random() < 0.7:
        card = rng.choice(["VISA", "MASTERCARD", "AMEX", "DISCOVER", "DEBIT"])
        masked = rng.choice(["XXXX", "************", "****"]) + f"{rng.randint(0, 9999):04d}"
        add([(card, "PAYMENT_METHOD"), (masked, "PAYMENT_METHOD")], [(money(grand), "O")])
        if rng.random() < 0.4:
            add(_tokens(f"AUTH CODE {rng.randint(100000, 999999)}", "O"))
    else:
        tendered = -(-grand // 500) * 500 + rng.choice([0, 0, 500, 1000])  # round up to the next $5 or more
        add([("CASH", "PAYMENT_METHOD")], [(money(tendered), "O")])
        add(_tokens(rng.choice(["CHANGE", "Change Due"]), "O"), [(money(tendered - grand), "CHANGE")])
    if rng.random() < 0.2:
        add(_tokens(rng.choice(["Rewards ID:", "Member #"]), "O") + [(f"****{rng.randint(0, 9999):04d}", "LOYALTY_ID")])
    for footer in rng.sample(FOOTERS, rng.randint(1, 2)):
        add(_tokens(footer, "O"), align="center")

    return _layout(rng, rid, lines)


def _layout(rng: random.Random, rid: str, lines: list[tuple[list, list, str]]) -> Receipt:
    """Place every token: left margin, right-aligned price column, centred header lines."""
    width = float(rng.randint(500, 640))
    margin = rng.uniform(15, 45)
    line_h = rng.uniform(22, 30)
    top = rng.uniform(20, 50)
    height = top + line_h * len(lines) + rng.uniform(20, 60)
    # Per-receipt character width, shrunk if needed so the longest line (plus jitter) still fits.
    longest = max(sum(len(t) + 1 for t, _ in left + right) + 4 for left, right, _ in lines)
    char_w = min(rng.uniform(7.0, 10.0), (width - 2 * margin) / (longest * 1.1))
    word_h = line_h * rng.uniform(0.55, 0.7)

    def widths(tokens):
        return [len(t) * char_w * rng.uniform(0.95, 1.08) for t, _ in tokens]

    def span(ws):
        return sum(ws) + char_w * max(len(ws) - 1, 0)

    words: list[Word] = []

    def emit(token, line_id, x0, y0, w):
        box = (round(x0, 1), round(y0, 1), round(min(x0 + w, width), 1), round(min(y0 + word_h, height), 1))
        words.append(Word(text=token[0], box=box, line=line_id, label=token[1]))

    for line_id, (left, right, align) in enumerate(lines):
        y0 = top + line_id * line_h + rng.uniform(-1.5, 1.5)
        lw, rw = widths(left), widths(right)
        x = (width - span(lw)) / 2 if align == "center" else margin + rng.uniform(0, 4)
        for token, w in zip(left, lw):
            emit(token, line_id, x, y0, w)
            x += w + char_w * rng.uniform(0.9, 1.2)  # the space between words
        x = width - margin - rng.uniform(0, 3) - span(rw)  # price column ends at the right margin
        for token, w in zip(right, rw):
            emit(token, line_id, x, y0, w)
            x += w + char_w
    return Receipt(id=rid, width=width, height=round(height, 1), words=words)
