from pktbench.cli import main

main(prog_name="pktbench")
