from latency_model.cli import main

raise SystemExit(main())
