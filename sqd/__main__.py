from sqd.cli import main

main()
