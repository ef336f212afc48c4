//! The services' admin HTTP API as the command line calls it (`orderflow dlq`, `orderflow
//! mqadmin`): requests carry the admin token, and every failure names the URL that failed.

use serde_json::Value;

/// A client of the services' `/admin` routes.
pub struct AdminApi {
    client: reqwest::Client,
    token: String,
}

impl AdminApi {
    pub fn new(token: &str) -> AdminApi {
        AdminApi { client: reqwest::Client::new(), token: token.to_owned() }
    }

    /// Sends one request; a refused token is an error, any other status is the caller's.
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        self.send(method, url, None).await
    }

    /// Sends one request with an optional JSON body; as [`AdminApi::call`].
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        json: Option<&Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        self.try_send(method, url, json)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{url}: no answer (is the service running?)"))
    }

    /// As [`AdminApi::send`], with `None` when the service does not answer at all (so a
    /// caller may ask the next one).
    pub async fn try_send(
        &self,
        method: reqwest::Method,
        url: &str,
        json: Option<&Value>,
    ) -> anyhow::Result<Option<(reqwest::StatusCode, Value)>> {
        let mut request = self.client.request(method, url).bearer_auth(&self.token);
        if let Some(json) = json {
            request = request.json(json);
        }
        let Ok(response) = request.send().await else {
            return Ok(None);
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == reqwest::StatusCode::UNAUTHORIZED {
            anyhow::bail!(
                "{url}: refused: wrong or missing admin token (--admin-token or ORDERFLOW_ADMIN_TOKEN)"
            );
        }
        Ok(Some((status, body)))
    }

    /// Sends one request and returns its body, failing on any status but success.
    pub async fn expect_ok(&self, method: reqwest::Method, url: &str) -> anyhow::Result<Value> {
        let (status, body) = self.call(method, url).await?;
        if !status.is_success() {
            anyhow::bail!("{url}: {status}: {}", error_message(&body));
        }
        Ok(body)
    }
}

/// The message of an API error body (`{"error":{"message":...}}`).
pub fn error_message(body: &Value) -> String {
    body.pointer("/error/message").and_then(Value::as_str).unwrap_or("error").to_owned()
}
