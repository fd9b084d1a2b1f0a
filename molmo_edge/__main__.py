from molmo_edge.cli import main

raise SystemExit(main())
