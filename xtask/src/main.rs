//! Developer tasks (`cargo xtask <task>`): the README's two commands and the rest.

fn main() -> anyhow::Result<()> {
    Ok(())
}
