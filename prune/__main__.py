from prune.cli import main
raise SystemExit(main())
