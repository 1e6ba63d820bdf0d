"""Training CLI and configs: python -m training.train --config training/configs/<name>.yaml."""
