//! `worker create-user`: the way in for the first ops user (and any user, from a shell).

use anyhow::{Context as _, bail};
use jobs::Settings;
use jobs::auth::{self, Role};

const USAGE: &str = "usage: worker create-user --email E --role ops|seller [--tenant ID] \
                     (password from STOFLOW_NEW_USER_PASSWORD or stdin)";

pub async fn create_user_command(settings: Settings, args: &[String]) -> anyhow::Result<()> {
    let (mut email, mut role, mut tenant) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .with_context(|| format!("{a} needs a value; {USAGE}"))?;
        match a.as_str() {
            "--email" => email = Some(v.clone()),
            "--role" => {
                role = Some(
                    Role::parse(v)
                        .with_context(|| format!("--role {v:?}: expected ops or seller"))?,
                )
            }
            "--tenant" => tenant = Some(v.parse::<i64>().context("--tenant must be an id")?),
            _ => bail!("unknown option {a:?}; {USAGE}"),
        }
    }
    let (Some(email), Some(role)) = (email, role) else {
        bail!("{USAGE}");
    };
    let password = match std::env::var("STOFLOW_NEW_USER_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            eprintln!("password for {email} (one line on stdin):");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let pool = jobs::db::connect_migrated(&settings, &jobs::db::WORKER).await?;
    let u = auth::create_user(&pool, &email, &password, role, tenant).await?;
    println!(
        "created {} user {email} (id {}, tenant {})",
        role.as_str(),
        u.id,
        u.tenant_id
    );
    Ok(())
}
