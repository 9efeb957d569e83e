"""MetaEM's federated form: the device/server split of each round (``protocol``, no transport)
and, to come, the Flower ClientApp / ServerApp adapters over it."""
