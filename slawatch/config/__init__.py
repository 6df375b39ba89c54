"""The configuration: pydantic models of the config file and the contract, and the YAML loader."""
