//! `sovra token`: a development token signed with this installation's
//! development secret.

use std::process::ExitCode;

use anyhow::{Context, bail};
use sovra_auth::{DevTokenRequest, mint_development_token};
use sovra_config::Settings;

#[derive(clap::Args)]
pub struct TokenArgs {
    /// Subject (`sub`).
    #[arg(long, default_value = "dev-user")]
    pub sub: String,
    /// Comma-separated roles: reader, ingester, auditor, admin.
    #[arg(long, value_delimiter = ',', default_value = "reader")]
    pub roles: Vec<String>,
    /// Comma-separated groups.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Lifetime: seconds, or a number followed by s, m, h or d.
    #[arg(long, default_value = "8h")]
    pub ttl: String,
}

fn parse_ttl(s: &str) -> anyhow::Result<i64> {
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n: i64 = num
        .parse()
        .with_context(|| format!("--ttl `{s}`: expected e.g. 3600, 30m, 8h or 7d"))?;
    if n <= 0 {
        bail!("--ttl must be positive");
    }
    Ok(n * mult)
}

pub fn token(settings: &Settings, args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let req = DevTokenRequest {
        subject: args.sub.clone(),
        tenant: args.tenant.clone(),
        roles: args
            .roles
            .iter()
            .filter(|r| !r.is_empty())
            .cloned()
            .collect(),
        groups: args
            .groups
            .iter()
            .filter(|g| !g.is_empty())
            .cloned()
            .collect(),
        ttl_secs: parse_ttl(&args.ttl)?,
    };
    let token = mint_development_token(&settings.auth, &req)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").ok(), Some(90));
        assert_eq!(parse_ttl("2m").ok(), Some(120));
        assert_eq!(parse_ttl("8h").ok(), Some(28800));
        assert_eq!(parse_ttl("1d").ok(), Some(86400));
        assert!(parse_ttl("x").is_err());
        assert!(parse_ttl("-1").is_err());
    }
}
