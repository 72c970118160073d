//! The EC2 Query API's XML answers, read with quick-xml's serde support.
//! Only the fields Wharf uses are declared; the rest are skipped.

use serde::Deserialize;

use crate::{Machine, MachineState, ProviderError};

/// A list the EC2 API writes as `<xSet><item>..</item>..</xSet>`.
#[derive(Debug, Deserialize)]
struct Items<T> {
    #[serde(default = "Vec::new", rename = "item")]
    items: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Items { items: Vec::new() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    instance_id: String,
    #[serde(default)]
    private_ip_address: Option<String>,
    instance_state: InstanceState,
}

#[derive(Debug, Deserialize)]
struct InstanceState {
    name: String,
}

impl From<Instance> for Machine {
    fn from(instance: Instance) -> Machine {
        Machine {
            id: instance.instance_id,
            address: instance.private_ip_address,
            state: MachineState::from_ec2(&instance.instance_state.name),
            join_command: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunInstancesResponse {
    #[serde(default)]
    instances_set: Items<Instance>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reservation {
    #[serde(default)]
    instances_set: Items<Instance>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInstancesResponse {
    #[serde(default)]
    reservation_set: Items<Reservation>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorResponse {
    errors: ErrorList,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorList {
    #[serde(default)]
    error: Vec<ApiError>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiError {
    code: String,
    #[serde(default)]
    message: String,
}

fn parse<'de, T: Deserialize<'de>>(action: &str, body: &'de str) -> Result<T, ProviderError> {
    quick_xml::de::from_str(body).map_err(|e| ProviderError::Answer {
        action: action.to_string(),
        message: e.to_string(),
    })
}

/// The instances a RunInstances call started.
pub(crate) fn run_instances(body: &str) -> Result<Vec<Machine>, ProviderError> {
    let response: RunInstancesResponse = parse("RunInstances", body)?;
    Ok(response
        .instances_set
        .items
        .into_iter()
        .map(Machine::from)
        .collect())
}

/// One page of DescribeInstances: its instances and the next page's token.
pub(crate) fn describe_instances(
    body: &str,
) -> Result<(Vec<Machine>, Option<String>), ProviderError> {
    let response: DescribeInstancesResponse = parse("DescribeInstances", body)?;
    let machines = response
        .reservation_set
        .items
        .into_iter()
        .flat_map(|r| r.instances_set.items)
        .map(Machine::from)
        .collect();
    let next = response.next_token.filter(|t| !t.is_empty());
    Ok((machines, next))
}

/// The refusal in an error answer, or `None` if the body is not one.
pub(crate) fn refusal(action: &str, body: &str) -> Option<ProviderError> {
    let response: ErrorResponse = quick_xml::de::from_str(body).ok()?;
    let error = response.errors.error.into_iter().next()?;
    Some(ProviderError::Refused {
        action: action.to_string(),
        code: error.code,
        message: error.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>
  <reservationId>r-1234567890abcdef0</reservationId>
  <ownerId>123456789012</ownerId>
  <groupSet/>
  <instancesSet>
    <item>
      <instanceId>i-1234567890abcdef0</instanceId>
      <imageId>ami-bff32ccc</imageId>
      <instanceState><code>0</code><name>pending</name></instanceState>
      <privateDnsName>ip-192-168-1-88.eu-west-1.compute.internal</privateDnsName>
      <instanceType>t2.micro</instanceType>
      <privateIpAddress>192.168.1.88</privateIpAddress>
      <tagSet>
        <item><key>wharf.io/pool</key><value>burst</value></item>
      </tagSet>
    </item>
    <item>
      <instanceId>i-0598c7d356eba48d7</instanceId>
      <instanceState><code>0</code><name>pending</name></instanceState>
    </item>
  </instancesSet>
</RunInstancesResponse>"#;

    const DESCRIBE: &str = r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>8f7724cf-496f-496e-8fe3-example</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1</reservationId>
      <instancesSet>
        <item>
          <instanceId>i-a</instanceId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <privateIpAddress>10.0.0.12</privateIpAddress>
        </item>
      </instancesSet>
    </item>
    <item>
      <reservationId>r-2</reservationId>
      <instancesSet>
        <item>
          <instanceId>i-b</instanceId>
          <instanceState><code>32</code><name>shutting-down</name></instanceState>
        </item>
        <item>
          <instanceId>i-c</instanceId>
          <instanceState><code>48</code><name>terminated</name></instanceState>
        </item>
      </instancesSet>
    </item>
  </reservationSet>
  <nextToken>page-2</nextToken>
</DescribeInstancesResponse>"#;

    #[test]
    fn run_instances_reads_every_instance() {
        let machines = run_instances(RUN).unwrap();
        assert_eq!(machines.len(), 2);
        assert_eq!(machines[0].id, "i-1234567890abcdef0");
        assert_eq!(machines[0].address.as_deref(), Some("192.168.1.88"));
        assert_eq!(machines[0].state, MachineState::Pending);
        assert_eq!(machines[1].address, None);
    }

    #[test]
    fn describe_instances_flattens_reservations_and_keeps_the_token() {
        let (machines, next) = describe_instances(DESCRIBE).unwrap();
        let states: Vec<_> = machines.iter().map(|m| (m.id.as_str(), m.state)).collect();
        assert_eq!(
            states,
            [
                ("i-a", MachineState::Running),
                ("i-b", MachineState::Stopping),
                ("i-c", MachineState::Gone),
            ]
        );
        assert_eq!(next.as_deref(), Some("page-2"));
        let empty = r#"<DescribeInstancesResponse><reservationSet/></DescribeInstancesResponse>"#;
        assert_eq!(describe_instances(empty).unwrap(), (vec![], None));
    }

    #[test]
    fn an_error_answer_becomes_a_refusal() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-x]' does not exist</Message></Error></Errors><RequestID>ea966190</RequestID></Response>"#;
        let refused = refusal("RunInstances", body).unwrap();
        assert_eq!(
            refused.to_string(),
            "provider refused RunInstances: InvalidAMIID.NotFound: The image id '[ami-x]' does not exist"
        );
        assert!(refusal("RunInstances", "<html>bad gateway</html>").is_none());
        assert!(run_instances("not xml").is_err());
    }
}
