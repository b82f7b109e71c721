from ringserve.runtime.cli import main

raise SystemExit(main())
