"""python -m rootless.monitor CONTAINER_ID [READY_FD]"""

import sys

from rootless.monitor.main import main

sys.exit(main(sys.argv[1:]))
