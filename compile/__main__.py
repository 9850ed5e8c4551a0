from compile.cli import main

raise SystemExit(main())
