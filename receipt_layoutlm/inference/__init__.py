"""Using a trained model: prediction over receipts."""
