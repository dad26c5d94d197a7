//! Variables for guests (`fermyon:spin/variables`): the component's own variables,
//! rendered at load from the application's, with Spin's name grammar and errors.

use super::Wt;
use crate::bindings::fermyon::spin2_0_0::variables;
use crate::manifest::check_variable_name;
use crate::state::HostState;

impl variables::Host for HostState {
    async fn get(&mut self, name: String) -> Wt<Result<String, variables::Error>> {
        if check_variable_name(&name).is_err() {
            return Ok(Err(variables::Error::InvalidName(name)));
        }
        Ok(match self.component.variables.get(&name) {
            Some(v) => Ok(v.clone()),
            None => Err(variables::Error::Undefined(format!("no variable for {name:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testing::{state, Grants};
    use variables::Host as _;

    #[tokio::test]
    async fn a_component_sees_only_its_own_variables() {
        let mut s = state(Grants { variables: &[("redis_url", "redis://r:1")], ..Grants::default() });
        assert_eq!(s.get("redis_url".into()).await.unwrap().unwrap(), "redis://r:1");
        let undefined = s.get("jwt_secret".into()).await.unwrap();
        assert!(matches!(undefined, Err(variables::Error::Undefined(_))), "{undefined:?}");
        let invalid = s.get("Redis-URL".into()).await.unwrap();
        assert!(matches!(invalid, Err(variables::Error::InvalidName(ref n)) if n == "Redis-URL"), "{invalid:?}");
    }
}
