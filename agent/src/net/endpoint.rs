//! Endpoint and identifier rules (pure): where the commands API lives for a
//! region and which partition a region belongs to.

/// `aws`, `aws-cn`, `aws-us-gov`, `aws-eusc` from the region name.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("eusc-") {
        "aws-eusc"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else {
        "aws"
    }
}

pub fn domain(region: &str) -> &'static str {
    match partition(region) {
        "aws-cn" => "amazonaws.com.cn",
        "aws-eusc" => "amazonaws.eu",
        "aws-iso" => "c2s.ic.gov",
        "aws-iso-b" => "sc2s.sgov.gov",
        _ => "amazonaws.com",
    }
}

/// The commands API URL (Ruby `deploy_control_endpoint.rb`): an explicit
/// `:deploy_control_endpoint:` wins; otherwise
/// `https://codedeploy-commands[-secure][-fips].<region>.<domain>`.
pub fn commands_endpoint(
    region: &str,
    enable_auth_policy: bool,
    use_fips: bool,
    override_url: Option<&str>,
) -> String {
    if let Some(u) = override_url {
        return u.trim_end_matches('/').to_string();
    }
    let mut service = String::from("codedeploy-commands");
    if enable_auth_policy {
        service.push_str("-secure");
    }
    if use_fips {
        service.push_str("-fips");
    }
    format!("https://{service}.{region}.{}", domain(region))
}

/// `arn:<partition>:ec2:<region>:<account>:instance/<id>`
pub fn ec2_host_identifier(region: &str, account: &str, instance_id: &str) -> String {
    format!(
        "arn:{}:ec2:{region}:{account}:instance/{instance_id}",
        partition(region)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_per_partition_and_mode() {
        assert_eq!(
            commands_endpoint("us-east-1", false, false, None),
            "https://codedeploy-commands.us-east-1.amazonaws.com"
        );
        assert_eq!(
            commands_endpoint("cn-north-1", true, false, None),
            "https://codedeploy-commands-secure.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            commands_endpoint("us-gov-west-1", true, true, None),
            "https://codedeploy-commands-secure-fips.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(
            commands_endpoint("eusc-de-east-1", false, false, None),
            "https://codedeploy-commands.eusc-de-east-1.amazonaws.eu"
        );
        assert_eq!(
            commands_endpoint("us-east-1", true, true, Some("http://127.0.0.1:9/")),
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn host_identifier_carries_the_partition() {
        assert_eq!(
            ec2_host_identifier("cn-northwest-1", "123", "i-0abc"),
            "arn:aws-cn:ec2:cn-northwest-1:123:instance/i-0abc"
        );
    }
}
