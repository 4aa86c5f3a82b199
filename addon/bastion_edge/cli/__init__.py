"""The `bastion-edge` command line."""
