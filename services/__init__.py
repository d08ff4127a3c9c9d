"""The four owners of data: customers, catalog, inventory and orders, each a gRPC server over its own database."""
