"""Paired shadow evaluation of proposed candidates on fresh traffic, and the gate."""
