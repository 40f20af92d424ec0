"""The cascade: stages as data, the chain that samples them one after another."""
