//! Command-line flags for quotas, made from berth-core's one list of them
//! (`QUOTA_FIELDS`): the server's defaults (`--quota-...`, also from
//! `BERTH_QUOTA_...`) and a tenant's own settings (`--max-...`).

use berth_core::{QUOTA_FIELDS, QuotaOverrides, Quotas};
use clap::error::ErrorKind;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, value_parser};

fn server_env(flag: &str) -> String {
    format!("BERTH_{}", flag.replace('-', "_").to_uppercase())
}

fn read(m: &ArgMatches) -> Result<QuotaOverrides, clap::Error> {
    let mut o = QuotaOverrides::default();
    for f in QUOTA_FIELDS {
        if let Some(v) = m.get_one::<u64>(f.name) {
            o.set(f.name, *v)
                .map_err(|e| clap::Error::raw(ErrorKind::ValueValidation, e.0))?;
        }
    }
    Ok(o)
}

/// A tenant's own quota settings; unnamed ones are absent.
#[derive(Debug, Clone, Default)]
pub struct TenantQuotas(pub QuotaOverrides);

impl FromArgMatches for TenantQuotas {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        read(m).map(Self)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for TenantQuotas {
    fn augment_args(cmd: Command) -> Command {
        QUOTA_FIELDS.iter().fold(cmd, |cmd, f| {
            cmd.arg(
                Arg::new(f.name)
                    .long(f.name.replace('_', "-"))
                    .value_name("N")
                    .value_parser(value_parser!(u64))
                    .help(f.help.trim().to_owned()),
            )
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// Every tenant's quotas unless the admin sets its own.
#[derive(Debug, Clone, Default)]
pub struct ServerQuotas(pub Quotas);

impl FromArgMatches for ServerQuotas {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(Quotas::default().with(&read(m)?)))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for ServerQuotas {
    fn augment_args(cmd: Command) -> Command {
        let defaults = Quotas::default().as_overrides();
        QUOTA_FIELDS.iter().fold(cmd, |cmd, f| {
            let mut arg = Arg::new(f.name)
                .long(f.server_flag)
                .env(server_env(f.server_flag))
                .value_name("N")
                .value_parser(value_parser!(u64))
                .help(format!("Default for every tenant: {}", f.help.trim()));
            if let Some(d) = defaults.get(f.name) {
                arg = arg.default_value(d.to_string());
            }
            cmd.arg(arg)
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        q: TenantQuotas,
    }

    #[derive(Parser)]
    struct S {
        #[command(flatten)]
        q: ServerQuotas,
    }

    #[test]
    fn every_quota_is_a_flag_of_both_kinds() {
        let t =
            T::try_parse_from(["t", "--max-memory-mb", "512", "--max-body-bytes", "9"]).unwrap();
        assert_eq!(t.q.0.max_memory_mb, Some(512));
        assert_eq!(t.q.0.max_body_bytes, Some(9));
        assert_eq!(t.q.0.max_cpu_millis, None);
        assert!(T::try_parse_from(["t", "--max-memory-mb", "99999999999"]).is_err());

        let s = S::try_parse_from(["s", "--quota-concurrent-tasks", "3"]).unwrap();
        assert_eq!(s.q.0.max_concurrent_tasks, 3);
        assert_eq!(s.q.0.max_memory_mb, Quotas::default().max_memory_mb);
        for f in QUOTA_FIELDS {
            let long = format!("--{}", f.name.replace('_', "-"));
            assert!(T::try_parse_from(["t", &long, "1"]).is_ok(), "{long}");
            let long = format!("--{}", f.server_flag);
            assert!(S::try_parse_from(["s", &long, "1"]).is_ok(), "{long}");
        }
    }
}
