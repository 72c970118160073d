//! The EC2 driver: instances through the EC2 Query API (form-encoded POSTs
//! signed with Signature V4, XML answers), at AWS or at any compatible
//! endpoint (moto's server in the tests).

pub mod sigv4;
mod xml;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;

use wharf_api::LABEL_INSTANCE_ID;

use crate::{
    Credentials, Machine, MachineProvider, MachineRequest, MachineState, ProviderError,
    TAG_CLUSTER, TAG_POOL,
};

/// The API version every call names.
const API_VERSION: &str = "2016-11-15";

/// What the `ec2` driver reads from `ProviderSpec.settings`.
///
/// - `region` (required), `endpoint` (default `https://ec2.REGION.amazonaws.com`)
/// - `imageId` (required): the AMI machines boot
/// - `instanceType` (default `t3.medium`), or per machine class
///   `instanceType.CLASS` (e.g. `instanceType.std-32c32g: c6i.8xlarge`)
/// - `subnetId` (optional)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ec2Settings {
    /// The API's base URL.
    pub endpoint: String,
    /// The region signed for.
    pub region: String,
    /// The AMI.
    pub image_id: String,
    /// The instance type when the class has none of its own.
    pub instance_type: String,
    /// Instance types by machine class.
    pub class_types: BTreeMap<String, String>,
    /// The subnet instances start in.
    pub subnet_id: Option<String>,
}

impl Ec2Settings {
    /// Reads the settings map of a cluster's provider spec.
    ///
    /// ```
    /// let settings = [
    ///     ("region", "eu-west-1"),
    ///     ("imageId", "ami-12345678"),
    ///     ("instanceType.std-32c32g", "c6i.8xlarge"),
    /// ]
    /// .map(|(k, v)| (k.to_string(), v.to_string()))
    /// .into_iter()
    /// .collect();
    /// let ec2 = wharf_provider::Ec2Settings::from_spec(&settings).unwrap();
    /// assert_eq!(ec2.endpoint, "https://ec2.eu-west-1.amazonaws.com");
    /// assert_eq!(ec2.instance_type_for("std-32c32g"), "c6i.8xlarge");
    /// assert_eq!(ec2.instance_type_for("other"), "t3.medium");
    /// ```
    pub fn from_spec(settings: &BTreeMap<String, String>) -> Result<Ec2Settings, ProviderError> {
        let required = |key: &str| {
            settings
                .get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| ProviderError::Config(format!("the ec2 driver needs {key}")))
        };
        let region = required("region")?;
        let endpoint = settings
            .get("endpoint")
            .cloned()
            .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        reqwest::Url::parse(&endpoint)
            .map_err(|e| ProviderError::Config(format!("endpoint {endpoint:?}: {e}")))?;
        let class_types = settings
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("instanceType.")?.to_string(), v.clone())))
            .collect();
        Ok(Ec2Settings {
            endpoint,
            region,
            image_id: required("imageId")?,
            instance_type: settings
                .get("instanceType")
                .cloned()
                .unwrap_or_else(|| "t3.medium".into()),
            class_types,
            subnet_id: settings.get("subnetId").cloned(),
        })
    }

    /// The instance type of machines of `class`.
    pub fn instance_type_for(&self, class: &str) -> &str {
        self.class_types.get(class).unwrap_or(&self.instance_type)
    }
}

/// Instances at an EC2-compatible endpoint.
pub struct Ec2Machines {
    settings: Ec2Settings,
    credentials: Credentials,
    http: reqwest::Client,
}

impl Ec2Machines {
    /// A driver with these settings and keys, calling through `http`.
    pub fn new(settings: Ec2Settings, credentials: Credentials, http: reqwest::Client) -> Self {
        Ec2Machines {
            settings,
            credentials,
            http,
        }
    }

    /// Posts one Query API action and returns the answer's body.
    async fn call(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, ProviderError> {
        let body = query_body(action, params);
        let url = reqwest::Url::parse(&self.settings.endpoint)
            .map_err(|e| ProviderError::Config(format!("endpoint: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(ProviderError::Config("endpoint has no host".into())),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let amz_date = sigv4::amz_date(now);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let path = match url.path() {
            "" => "/",
            path => path,
        };
        let authorization = sigv4::authorization(
            &self.credentials,
            &sigv4::Scope {
                amz_date: &amz_date,
                region: &self.settings.region,
                service: "ec2",
            },
            &sigv4::Request {
                method: "POST",
                path,
                query: &[],
                headers: &[
                    ("content-type", content_type),
                    ("host", &host),
                    ("x-amz-date", &amz_date),
                ],
                body: body.as_bytes(),
            },
        );
        let response = self
            .http
            .post(url)
            .header("content-type", content_type)
            .header("x-amz-date", &amz_date)
            .header("authorization", authorization)
            .body(body)
            .send()
            .await
            .map_err(|e| transport(action, &e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| transport(action, &e))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(
            xml::refusal(action, &text).unwrap_or_else(|| ProviderError::Refused {
                action: action.to_string(),
                code: status.as_u16().to_string(),
                message: text.chars().take(200).collect(),
            }),
        )
    }
}

/// A failed exchange, named with its innermost cause: reqwest's own
/// message only says that sending failed, the cause says why.
fn transport(action: &str, err: &reqwest::Error) -> ProviderError {
    let mut cause: &dyn std::error::Error = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    ProviderError::Transport(format!("{action}: {err}: {cause}"))
}

/// The form body of an action: `Action`, `Version`, then the parameters.
fn query_body(action: &str, params: &[(String, String)]) -> String {
    let mut pairs = vec![
        ("Action".to_string(), action.to_string()),
        ("Version".to_string(), API_VERSION.to_string()),
    ];
    pairs.extend_from_slice(params);
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", sigv4::uri_encode(k), sigv4::uri_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// RunInstances' parameters for `request`.
fn run_parameters(settings: &Ec2Settings, request: &MachineRequest) -> Vec<(String, String)> {
    let p = |k: &str, v: &str| (k.to_string(), v.to_string());
    let count = request.count.to_string();
    let mut params = vec![
        p("ImageId", &settings.image_id),
        p(
            "InstanceType",
            settings.instance_type_for(&request.machine_class),
        ),
        p("MinCount", &count),
        p("MaxCount", &count),
        p("TagSpecification.1.ResourceType", "instance"),
        p("TagSpecification.1.Tag.1.Key", TAG_CLUSTER),
        p("TagSpecification.1.Tag.1.Value", &request.cluster),
        p("TagSpecification.1.Tag.2.Key", TAG_POOL),
        p("TagSpecification.1.Tag.2.Value", &request.pool),
    ];
    if let Some(subnet) = &settings.subnet_id {
        params.push(p("SubnetId", subnet));
    }
    if let Some(command) = &request.join_command {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_data(command));
        params.push(p("UserData", &encoded));
    }
    params
}

/// An instance's first-boot script: the join command, run with the node
/// named after the instance and labelled `wharf.io/instance-id` with its
/// id (how the autoscaler tells which node a machine became), both read
/// from the instance metadata service (IMDSv2, else v1).
fn user_data(join_command: &str) -> String {
    format!(
        "#!/bin/sh\n\
         set -eu\n\
         imds=http://169.254.169.254/latest\n\
         t=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' $imds/api/token || true)\n\
         id=$(curl -fsS -H \"X-aws-ec2-metadata-token: $t\" $imds/meta-data/instance-id)\n\
         export WHARF_NODE_NAME=\"$id\" WHARF_AGENT_ARGS=\"--labels {LABEL_INSTANCE_ID}=$id\"\n\
         {join_command}\n"
    )
}

/// DescribeInstances' filters for a pool's live instances.
fn pool_filters(cluster: &str, pool: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let filters: [(&str, &[&str]); 3] = [
        (&format!("tag:{TAG_CLUSTER}"), &[cluster]),
        (&format!("tag:{TAG_POOL}"), &[pool]),
        (
            "instance-state-name",
            &["pending", "running", "stopping", "stopped", "shutting-down"],
        ),
    ];
    for (i, (name, values)) in filters.iter().enumerate() {
        params.push((format!("Filter.{}.Name", i + 1), name.to_string()));
        for (j, value) in values.iter().enumerate() {
            params.push((
                format!("Filter.{}.Value.{}", i + 1, j + 1),
                value.to_string(),
            ));
        }
    }
    params
}

#[async_trait]
impl MachineProvider for Ec2Machines {
    fn driver(&self) -> &'static str {
        "ec2"
    }

    async fn create(&self, request: &MachineRequest) -> Result<Vec<Machine>, ProviderError> {
        if request.count == 0 {
            return Ok(Vec::new());
        }
        let body = self
            .call("RunInstances", &run_parameters(&self.settings, request))
            .await?;
        xml::run_instances(&body)
    }

    async fn list(&self, cluster: &str, pool: &str) -> Result<Vec<Machine>, ProviderError> {
        let filters = pool_filters(cluster, pool);
        let mut machines = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = filters.clone();
            if let Some(token) = token.take() {
                params.push(("NextToken".into(), token));
            }
            let body = self.call("DescribeInstances", &params).await?;
            let (page, next) = xml::describe_instances(&body)?;
            machines.extend(page.into_iter().filter(|m| m.state != MachineState::Gone));
            match next {
                Some(next) => token = Some(next),
                None => return Ok(machines),
            }
        }
    }

    async fn delete(&self, ids: &[String]) -> Result<(), ProviderError> {
        if ids.is_empty() {
            return Ok(());
        }
        let params: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("InstanceId.{}", i + 1), id.clone()))
            .collect();
        self.call("TerminateInstances", &params).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Ec2Settings {
        let map = [
            ("region", "us-east-1"),
            ("imageId", "ami-1"),
            ("subnetId", "subnet-9"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect();
        Ec2Settings::from_spec(&map).unwrap()
    }

    #[test]
    fn run_instances_tags_the_pool_and_carries_the_join_command() {
        let request = MachineRequest {
            cluster: "aws".into(),
            pool: "burst".into(),
            count: 2,
            machine_class: "small".into(),
            join_command: Some("wharf join".into()),
            in_use: vec![],
        };
        let body = query_body("RunInstances", &run_parameters(&settings(), &request));
        assert!(body.starts_with("Action=RunInstances&Version=2016-11-15&ImageId=ami-1"));
        assert!(body.contains("&MinCount=2&MaxCount=2&"));
        assert!(body.contains("TagSpecification.1.Tag.2.Key=wharf.io%2Fpool"));
        assert!(body.contains("TagSpecification.1.Tag.2.Value=burst"));
        assert!(body.contains("&SubnetId=subnet-9"));
        let encoded = body.split("&UserData=").nth(1).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(
                encoded
                    .replace("%2B", "+")
                    .replace("%2F", "/")
                    .replace("%3D", "="),
            )
            .unwrap();
        let script = String::from_utf8(decoded).unwrap();
        assert!(script.starts_with("#!/bin/sh\nset -eu\n"), "{script}");
        assert!(
            script.contains("export WHARF_NODE_NAME=\"$id\" WHARF_AGENT_ARGS=\"--labels wharf.io/instance-id=$id\"\n"),
            "{script}"
        );
        assert!(script.ends_with("\nwharf join\n"), "{script}");
    }

    #[test]
    fn listing_filters_by_both_tags_and_live_states() {
        let body = query_body("DescribeInstances", &pool_filters("aws", "burst"));
        assert!(body.contains("Filter.1.Name=tag%3Awharf.io%2Fcluster&Filter.1.Value.1=aws"));
        assert!(body.contains("Filter.2.Name=tag%3Awharf.io%2Fpool&Filter.2.Value.1=burst"));
        assert!(body.contains("Filter.3.Name=instance-state-name&Filter.3.Value.1=pending"));
        assert!(!body.contains("terminated"));
    }

    #[test]
    fn settings_name_what_is_missing() {
        let err = Ec2Settings::from_spec(&BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "provider settings: the ec2 driver needs region"
        );
        let map = [
            ("region", "r"),
            ("imageId", "ami-1"),
            ("endpoint", "not a url"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect();
        assert!(Ec2Settings::from_spec(&map).is_err());
    }
}
