from vm_agent.cli import main

raise SystemExit(main())
