"""One folder per method (peft-style): `configuration_<m>.py` + `modeling_<m>.py`, flat imports only."""
