"""Fleet spec models and loading. Pure pydantic + PyYAML: safe for ``delivery`` to import."""
