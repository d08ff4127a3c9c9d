"""pullgate: the command line, the launcher, and the generated gRPC code for every contract."""
