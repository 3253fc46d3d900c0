"""`python -m appliance.cli`, as the tests and `vmctl serve`'s children run it."""
import sys

from appliance.cli import main

sys.exit(main())
