from modelpod.cli import main

main()
