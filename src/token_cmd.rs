//! `earshot token`: mints a development token with the secret a local `earshot up` signs
//! with, so trying Earshot needs no JWT code and no admin key.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use earshot_auth::{IssueError, IssueRequest, Issuer, ALL_MEETINGS, DEFAULT_AUDIENCE, DEFAULT_MAX_TOKEN_TTL_S, DEFAULT_TOKEN_TTL_S};
use earshot_host::variables::env_name;

use earshot_server::secrets;

/// Where `earshot up` keeps its state when `--kv-path` is left alone.
const DEFAULT_STATE_DIR: &str = ".earshot";

/// Random bytes in a minted token's `jti` (128 bits: collision-free for any realistic count).
const JTI_BYTES: usize = 16;

/// `earshot token` flags.
#[derive(clap::Args)]
pub(crate) struct TokenArgs {
    /// Space-separated scopes (subset of `ingest subscribe publish admin`).
    #[arg(long, default_value = "ingest subscribe")]
    scope: String,
    /// A meeting the token may touch (repeat for several); `*` for all. Default: `*`.
    #[arg(long = "meeting", value_name = "ID")]
    meetings: Vec<String>,
    /// Lifetime in seconds (capped by `max_token_ttl_s`, default one day).
    #[arg(long, default_value_t = DEFAULT_TOKEN_TTL_S)]
    ttl: u64,
    /// The token's subject.
    #[arg(long, default_value = "dev")]
    sub: String,
    #[command(flatten)]
    state: StateDirArg,
}

/// Where the development secrets live (shared with `earshot stream`).
#[derive(clap::Args)]
pub(crate) struct StateDirArg {
    /// The state folder of the local `earshot up` (holds dev-secrets.json).
    /// Default: the folder of `EARSHOT_KV_PATH` if set, else `.earshot`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl StateDirArg {
    /// The folder, resolved like `earshot up` resolves it from `--kv-path`.
    pub(crate) fn resolve(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        std::env::var_os("EARSHOT_KV_PATH")
            .map(PathBuf::from)
            .and_then(|kv| kv.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }
}

/// What to mint.
pub(crate) struct Mint<'a> {
    pub(crate) sub: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) meetings: Vec<String>,
    pub(crate) ttl_s: u64,
}

/// Signs a token as the local server's auth component would.
pub(crate) fn mint(state_dir: &Path, what: Mint<'_>) -> anyhow::Result<String> {
    let algorithm = std::env::var(env_name("jwt_algorithm")).unwrap_or_default();
    anyhow::ensure!(
        algorithm.is_empty() || algorithm.eq_ignore_ascii_case("HS256"),
        "jwt_algorithm is {algorithm}: tokens for asymmetric keys are minted by whoever holds the private key, not by `earshot token`"
    );
    let secret = secrets::jwt_secret(state_dir)?;
    let audience = std::env::var(env_name("jwt_audience")).unwrap_or_else(|_| DEFAULT_AUDIENCE.to_owned());
    let issuer = Issuer::from_settings(&secret, &audience).context("the JWT secret cannot sign tokens")?;
    let max_ttl_s = match std::env::var(env_name("max_token_ttl_s")) {
        Ok(v) => v.trim().parse().with_context(|| format!("{} is not a number of seconds", env_name("max_token_ttl_s")))?,
        Err(_) => DEFAULT_MAX_TOKEN_TTL_S,
    };
    if what.ttl_s > max_ttl_s {
        eprintln!("earshot token: --ttl {} capped to max_token_ttl_s = {max_ttl_s}", what.ttl_s);
    }
    let meetings = if what.meetings.is_empty() { vec![ALL_MEETINGS.to_owned()] } else { what.meetings };
    let request = IssueRequest { sub: what.sub.to_owned(), scope: what.scope.to_owned(), meetings, ttl_s: Some(what.ttl_s) };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs();
    let issued = issuer.issue(&request, now, max_ttl_s, random_jti()?).map_err(|e| match e {
        IssueError::InvalidField("scope") => anyhow::anyhow!("--scope must be a space-separated subset of `ingest subscribe publish admin`"),
        IssueError::InvalidField("meetings") => anyhow::anyhow!("--meeting takes ids of 1-128 characters of [A-Za-z0-9._-], or `*`"),
        IssueError::InvalidField("ttl_s") => anyhow::anyhow!("--ttl must be at least 1 second"),
        IssueError::InvalidField("sub") => anyhow::anyhow!("--sub must not be empty"),
        e => anyhow::Error::new(e).context("minting the token"),
    })?;
    Ok(issued.token)
}

fn random_jti() -> anyhow::Result<String> {
    let mut bytes = [0u8; JTI_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs `earshot token`: the token alone on stdout.
pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let token = mint(
        &args.state.resolve(),
        Mint { sub: &args.sub, scope: &args.scope, meetings: args.meetings, ttl_s: args.ttl },
    )?;
    println!("{token}");
    Ok(())
}
