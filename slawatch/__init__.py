"""slawatch: the shared kernel (config, model, stored schema, stores) and the composition root (cli)."""

__version__ = "0.1.0"
