"""QEMU devices for tests, benchmarks and the demo: the C device's firmware built and signed
(:mod:`ajour_devices.firmware`) and fleets of emulated mps2-an385 devices, each behind its own
``ajour-delivery gateway`` relay (:mod:`ajour_devices.qemu`).

Not part of the product (``delivery`` stays lean and is all a worker host installs) and not
a test helper (benchmarks import it without importing ``tests``): a development package of
the repository, beside ``benchmarks``, that needs the dev tools (make, arm-none-eabi-gcc,
qemu-system-arm, imgtool).
"""
