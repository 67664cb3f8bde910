"""Loopback stand-ins for the network services pytest-soap talks to, for tests."""
