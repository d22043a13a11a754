from mlpipe_cli.cli.main import main

main()
