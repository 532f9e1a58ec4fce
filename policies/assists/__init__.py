"""Assists: the small rules that bound what the model commands, one module each (see `.base` for the contract
and docs/agent.md for why each exists). `keystone_vla.policies.agent_config.ASSISTS` lists them by name."""
