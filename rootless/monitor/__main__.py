"""python -m rootless.monitor CONTAINER_ID [READY_FD] — the starter (rootless.monitor.main);
python -m rootless.monitor CONTAINER_ID --watch KEY=VALUE... — the lean watcher (.watch),
which must not import the starter's modules. Both show as `rootless.monitor ID` in ps."""

import sys

if sys.argv[2:3] == ["--watch"]:
    from rootless.monitor.watch import main as watch_main

    sys.exit(watch_main(sys.argv[3:]))

from rootless.monitor.main import main

sys.exit(main(sys.argv[1:]))
