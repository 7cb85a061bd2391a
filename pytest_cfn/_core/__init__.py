"""The sans-IO core: every decision of the bus, with no sockets, threads or clocks."""
