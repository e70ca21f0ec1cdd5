"""``gridpay demo``: a working gateway on embedded SQLite with demo data."""
import click


@click.command()
@click.option("--dir", "workdir", default="var/demo", show_default=True, help="where the demo keeps its files")
def demo(workdir: str) -> None:
    """Install demo data on embedded SQLite and start the gateway with a simulated bank."""
    click.echo(f"gridpay demo: working directory {workdir}")
