//! Accounts in the replicated state: removing one and changing its password or its
//! administrator flag. An account that still owns instances (not Done) or persistent disks is
//! not removed (what it owns would be left without anyone to see it), and the last
//! administrator is neither removed nor demoted (nobody could manage the cloud any more).

use stratus_common::api::InstanceState;

use super::{Outcome, Rejection, State};

impl State {
    pub(super) fn delete_user(&mut self, name: &str) -> Result<Outcome, Rejection> {
        let user = self
            .users
            .get(name)
            .ok_or_else(|| Rejection::UnknownUser(name.to_owned()))?;
        if user.admin && self.admins() == 1 {
            return Err(Rejection::LastAdmin(name.to_owned()));
        }
        let instances = self
            .instances
            .values()
            .filter(|i| i.owner == name && i.state != InstanceState::Done)
            .count();
        let volumes = self.volumes.values().filter(|v| v.owner == name).count();
        if instances + volumes > 0 {
            return Err(Rejection::UserOwns {
                name: name.to_owned(),
                instances,
                volumes,
            });
        }
        self.users.remove(name);
        self.trust.forget_user(name);
        Ok(Outcome::Applied)
    }

    pub(super) fn update_user(
        &mut self,
        name: &str,
        password_hash: Option<String>,
        admin: Option<bool>,
    ) -> Result<Outcome, Rejection> {
        let admins = self.admins();
        let user = self
            .users
            .get_mut(name)
            .ok_or_else(|| Rejection::UnknownUser(name.to_owned()))?;
        if admin == Some(false) && user.admin && admins == 1 {
            return Err(Rejection::LastAdmin(name.to_owned()));
        }
        let before = user.clone();
        if let Some(hash) = password_hash {
            user.password_hash = hash;
        }
        if let Some(admin) = admin {
            user.admin = admin;
        }
        Ok(if *user == before {
            Outcome::Unchanged
        } else {
            Outcome::Applied
        })
    }

    fn admins(&self) -> usize {
        self.users.values().filter(|u| u.admin).count()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::bootstrapped;
    use super::super::{Command, UserRecord};
    use super::*;

    fn alice(s: &mut State) {
        s.apply(Command::CreateUser(UserRecord {
            name: "alice".into(),
            password_hash: "$argon2id$a".into(),
            admin: false,
            created_ms: 5,
        }))
        .unwrap();
    }

    #[test]
    fn a_user_gets_a_new_password_and_is_made_admin_then_removed() {
        let mut s = bootstrapped();
        alice(&mut s);
        let update = |hash: Option<&str>, admin| Command::UpdateUser {
            name: "alice".into(),
            password_hash: hash.map(Into::into),
            admin,
        };
        assert_eq!(
            s.apply(update(Some("$argon2id$b"), None)),
            Ok(Outcome::Applied)
        );
        assert_eq!(s.users["alice"].password_hash, "$argon2id$b");
        assert_eq!(s.apply(update(None, Some(true))), Ok(Outcome::Applied));
        assert!(s.users["alice"].admin);
        assert_eq!(s.apply(update(None, Some(true))), Ok(Outcome::Unchanged));
        // Two administrators: either may go.
        assert_eq!(
            s.apply(Command::DeleteUser {
                name: "admin".into()
            }),
            Ok(Outcome::Applied)
        );
        assert_eq!(
            s.apply(update(None, Some(false))),
            Err(Rejection::LastAdmin("alice".into()))
        );
        assert_eq!(
            s.apply(Command::DeleteUser {
                name: "alice".into()
            }),
            Err(Rejection::LastAdmin("alice".into()))
        );
        assert_eq!(
            s.apply(Command::DeleteUser { name: "bob".into() }),
            Err(Rejection::UnknownUser("bob".into()))
        );
    }

    #[test]
    fn a_user_who_owns_an_instance_is_not_removed_until_it_is_done() {
        let mut s = bootstrapped();
        alice(&mut s);
        // The tests' instances belong to alice.
        super::super::tests::create(&mut s, "m1.small", Some("h1")).unwrap();
        let before = s.clone();
        let refused = s
            .apply(Command::DeleteUser {
                name: "alice".into(),
            })
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "user alice still owns 1 instance(s) and 0 volume(s): kill and delete them first"
        );
        assert_eq!(s, before);
        s.apply(Command::KillInstance { id: 1, at_ms: 20 }).unwrap();
        s.apply(Command::ReportInstance {
            host: "h1".into(),
            id: 1,
            state: stratus_common::agent::ActualState::Gone,
            reason: None,
            at_ms: 30,
        })
        .unwrap();
        assert_eq!(
            s.apply(Command::DeleteUser {
                name: "alice".into()
            }),
            Ok(Outcome::Applied)
        );
        assert!(!s.users.contains_key("alice"));
    }
}
