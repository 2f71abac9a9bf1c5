"""``python -m ajour_build.cli``."""

from ajour_build.cli import main

main()
