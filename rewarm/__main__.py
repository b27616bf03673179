from rewarm.cli import main

raise SystemExit(main())
