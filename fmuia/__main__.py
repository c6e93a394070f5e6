from fmuia.cli import main

main()
