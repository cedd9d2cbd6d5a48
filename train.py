"""Train, validate, test or predict: ``python train.py {fit,validate,test,predict} --config <yaml>``."""

from corrmatch.cli import main

if __name__ == "__main__":
    main()
