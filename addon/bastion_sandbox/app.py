"""The sandbox's aiohttp applications: the HTTPS API and the plain-HTTP redirector."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from bastion_sandbox import (
    audio,
    availability,
    chat,
    completions,
    embeddings,
    hold,
    images,
    responses,
    riva,
)
from bastion_sandbox.auth import auth_middleware
from bastion_sandbox.config import CONFIG_KEY, SandboxConfig
from bastion_sandbox.errors import INVALID_REQUEST, SERVER_ERROR, BastionError
from bastion_sandbox.faults import fault_middleware
from bastion_sandbox.journal import (
    JOURNAL_KEY,
    JOURNAL_PATH,
    Journal,
    clear_journal,
    get_journal,
)
from bastion_sandbox.models import catalogue, model_list, model_not_found, model_object
from bastion_sandbox.replies import error_response, json_response

CLIENT_MAX_SIZE = 64 * 1024 * 1024
log = logging.getLogger(__name__)


async def list_models(request: web.Request) -> web.Response:
    return json_response(model_list())


async def get_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    model = catalogue().get(model_id)
    if model is None:
        raise model_not_found(model_id)
    return json_response(model_object(model))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as an OpenAI envelope, like Bastion's gateway."""
    try:
        return await handler(request)
    except BastionError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status in (404, 405):
            message, code = f"Invalid URL ({request.method} {request.path})", "unknown_url"
        else:
            message, code = exc.reason, exc.reason.lower().replace(" ", "_")
        return error_response(BastionError(exc.status, message, code, INVALID_REQUEST))
    except ConnectionError:
        raise  # the client went away; nothing to answer
    except Exception:
        log.exception("sandbox handler failed for %s %s", request.method, request.path)
        return error_response(
            BastionError(
                500, "The sandbox failed to handle this request.", "server_error", SERVER_ERROR
            )
        )


def build_app(config: SandboxConfig, journal: Journal) -> web.Application:
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        middlewares=[
            hold.hold_middleware,  # outermost: a held request is not yet journalled
            journal.middleware("https"),
            error_middleware,
            auth_middleware(config.api_keys, config.persona),
            fault_middleware,
            availability.availability_middleware,
        ],
    )
    app[CONFIG_KEY] = config
    app[JOURNAL_KEY] = journal
    add = app.router.add_route
    add("GET", "/v1/models", list_models)
    add("GET", "/v1/models/{model_id}", get_model)
    add("POST", chat.PATH, chat.chat_completions)
    add("POST", completions.PATH, completions.completions)
    add("POST", embeddings.PATH, embeddings.embeddings)
    add("POST", images.PATH, images.image_generations)
    add("POST", audio.TRANSCRIPTIONS_PATH, audio.transcriptions)
    add("POST", audio.TRANSLATIONS_PATH, audio.translations)
    add("POST", responses.PATH, responses.responses)
    add("*", responses.PATH + "/{tail:.+}", responses.stored_response)
    add("POST", riva.TTS_PATH, riva.text_to_audio)
    add("GET", JOURNAL_PATH, get_journal)
    add("DELETE", JOURNAL_PATH, clear_journal)
    add("GET", images.IMAGE_FILES_PATH + "/{colour}.png", images.image_file)
    availability.install(app)  # /sandbox/models: unavailable models, capabilities
    hold.install(app)  # /sandbox/hold: requests wait at the door until let in
    return app


def build_redirect_app(journal: Journal, https_port: int) -> web.Application:
    """Answers everything with 301 to the same path over HTTPS, as Bastion does.

    Clients following it drop the Authorization header, so the HTTPS side says 401.
    """

    async def redirect(request: web.Request) -> web.Response:
        location = request.url.with_scheme("https").with_port(https_port)
        return web.Response(
            status=301,
            headers={"Location": str(location)},
            text=f"Moved Permanently: {location}\n",
        )

    app = web.Application(middlewares=[journal.middleware("http", read_bodies=False)])
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app
