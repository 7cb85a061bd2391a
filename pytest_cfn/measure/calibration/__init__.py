"""``cfn calibrate``: the Locust harness measured through faults of a known size.

``delay_proxy`` is the TCP proxy on loopback that injects a one-way delay and drops exactly N
events; ``calibrate`` runs the harness through it and compares injected with measured.
"""
