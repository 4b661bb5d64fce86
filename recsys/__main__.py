from recsys.cli import run

run()
