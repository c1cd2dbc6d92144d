"""`layoutlm-cli sweep`: Optuna searches the training recipe, every trial a job in the job store.

space.py: the search space (YAML/JSON file or preset) as Optuna distributions, and the settings of a
trial. study.py: the Optuna study kept beside the jobs (RDB storage on the embedded store's sqlite
directory, or rebuilt from the trial jobs of a DynamoDB store), trials run here or on the queue,
pruning, and what `sweep show` reads.
"""
