import sys

from inspector.sim.cameras import main

sys.exit(main())
