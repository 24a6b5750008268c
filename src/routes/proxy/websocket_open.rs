//! A WebSocket route's handshake (the session, its slot, the origin) and the relay's
//! session check.

use super::*;

/// The WebSocket handshake on a WebSocket route, then the relay (see `websocket::tunnel`).
pub(super) async fn open_websocket(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    route: &RouteSettings,
    rest: &str,
    (session, cookie): (Option<&LoadedSession>, Option<&str>),
    token: Option<&UpstreamToken<'_>>,
) -> Result<HttpResponse, ApiError> {
    let key = websocket::browser_key(req).map_err(|e| {
        ApiError::new(Problem::InvalidRequest)
            .detail("A WebSocket handshake needs one valid Sec-WebSocket-Key and Sec-WebSocket-Version: 13.")
            .cause(e)
    })?;
    let slot = match session {
        Some(session) => Some(socket_slot(&state.websockets, &state.events, session)?),
        None => None,
    };
    let client = state
        .proxy
        .websocket_client_for(route)
        .ok_or_else(|| ApiError::new(Problem::Internal))?;
    let url = upstream_url(&route.upstream, rest, req.query_string());
    let mut request = client
        .get(url)
        .version(reqwest::Version::HTTP_11)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .build()
        .map_err(|_| ApiError::new(Problem::InvalidRequest))?;
    let htu = crate::dpop::htu(request.url());
    let origin = route.upstream.origin().ascii_serialization();
    let nonce = state.proxy.dpop_nonces.get(&origin);
    let call = Call {
        method: "GET",
        htu: &htu,
        nonce: nonce.as_deref(),
    };
    upstream_headers(
        req,
        request.headers_mut(),
        state,
        (Forwarding::ApiWebSocket, &call),
        route,
        session,
        token,
    );
    // Frames are parsed on the way through; an extension (permessage-deflate) would
    // change what they mean, so none is offered.
    request.headers_mut().remove("sec-websocket-extensions");
    let measured = state.measured.then_some(&state.metrics);
    let response = send(
        client.execute(request),
        reqwest_failure,
        measured,
        route,
        None,
    )
    .await?;
    if matches!(token, Some(UpstreamToken::UserDpop(..))) {
        // A handshake is not sent twice; the nonce an upstream asks for serves the next one.
        let (status, headers) = (response.status(), response.headers());
        let sent = nonce.as_deref();
        state
            .proxy
            .dpop_nonces
            .learn(&origin, status, headers, sent);
    }
    if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(stream_response(
            response,
            response_policy(route, token),
            route.max_duration,
        ));
    }
    let settings = route.websocket.expect("a WebSocket route");
    let limits = websocket::TunnelLimits {
        idle: settings.idle,
        max_duration: route.max_duration,
        max_message_bytes: usize::try_from(route.max_body_bytes).unwrap_or(usize::MAX),
        until: state.drain.clone(),
    };
    let check = cookie.map(|cookie| session_check(state.clone(), cookie.to_owned()));
    let counted = websocket::SocketMetrics {
        metrics: state.metrics.clone(),
        route: route.prefix.clone(),
    };
    websocket::tunnel(response, payload, key, check, limits, counted, slot)
        .await
        .map_err(|e| {
            ApiError::new(Problem::UpstreamUnreachable)
                .detail("The upstream did not accept the WebSocket.")
                .cause(e)
        })
}

/// A place for one more socket of the session on this instance, or 429 at the cap
/// (`session.websocket_max_per_session`). The upstream is not asked.
fn socket_slot(
    websockets: &websocket::SocketSlots,
    events: &SecurityLog,
    session: &LoadedSession,
) -> Result<websocket::SocketSlot, ApiError> {
    websockets.take(&session.store_key).ok_or_else(|| {
        events.log(
            SecurityEvent::RateLimited,
            None,
            Some(&session.store_key),
            Some("websocket_max_per_session"),
        );
        ApiError::new(Problem::TooManyWebSockets).detail(format!(
            "A session may hold {} WebSockets open at once here; close one first.",
            websockets.max()
        ))
    })
}

/// A WebSocket's handshake must come from a page of the public origin, exactly.
pub(super) fn require_own_origin(
    req: &HttpRequest,
    public_url: &url::Url,
    events: &SecurityLog,
) -> Result<(), ApiError> {
    let expected = public_url.origin().ascii_serialization();
    let mut origins = req.headers().get_all(actix_web::http::header::ORIGIN);
    match (origins.next(), origins.next()) {
        (Some(origin), None) if origin.as_bytes() == expected.as_bytes() => Ok(()),
        _ => {
            events.log(
                SecurityEvent::CsrfRejected,
                None,
                None,
                Some("websocket handshake without this site's Origin"),
            );
            Err(ApiError::new(Problem::OriginRejected).detail(format!(
                "A WebSocket must be opened from a page of {expected}."
            )))
        }
    }
}

/// Asks the store, at each check of an open socket, whether its session still lives.
fn session_check(state: web::Data<AppState>, cookie: String) -> websocket::SessionCheck {
    let cookie = std::rc::Rc::new(cookie);
    Box::new(move || {
        let state = state.clone();
        let cookie = cookie.clone();
        Box::pin(async move {
            match state
                .flows
                .current_session(Some(&cookie), state.clock.now())
                .await
            {
                Ok(Some(_)) => websocket::SessionState::Live,
                Ok(None) => websocket::SessionState::Ended,
                Err(_) => websocket::SessionState::Unknown,
            }
        })
    })
}
