"""A real embedding model, offline, behind an OpenAI-compatible API.

Serves WordLlama's 256-dimension static model (shipped inside the `wordllama`
wheel; no torch, no download) as `POST /v1/embeddings`, for the integration
test of the `openai` provider, `scripts/demo.sh --embeddings wordllama` and
`scripts/bench-semantic.sh`.

    .venv/bin/python scripts/embeddings-server.py --port 8765
    # then: --embeddings.provider openai (url http://127.0.0.1:8765/v1, dimensions 256)

Embeddings are L2-normalized. It answers `GET /health` with 200 once loaded.
"""

import argparse
import json
import shutil
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import wordllama
from wordllama import WordLlama

MODEL = "wordllama-l2-supercat-256"


def load():
    # The wheel ships the tokenizer where the loader does not look, and the
    # loader downloads what it cannot find: put it where it looks, offline.
    cache = Path(tempfile.mkdtemp(prefix="wordllama-"))
    (cache / "tokenizers").mkdir()
    shipped = Path(wordllama.__file__).parent / "tokenizers" / "l2_supercat_tokenizer_config.json"
    shutil.copy(shipped, cache / "tokenizers" / shipped.name)
    return WordLlama.load(cache_dir=cache, disable_download=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    model = load()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.answer(200, {"status": "ok", "model": MODEL})
            else:
                self.answer(404, {"error": {"message": "not found"}})

        def do_POST(self):
            if self.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
                self.answer(404, {"error": {"message": "not found"}})
                return
            try:
                length = int(self.headers.get("content-length", "0"))
                request = json.loads(self.rfile.read(length))
                texts = request["input"]
                if isinstance(texts, str):
                    texts = [texts]
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                    raise ValueError("input must be a string or a list of strings")
            except (ValueError, KeyError, TypeError) as err:
                self.answer(400, {"error": {"message": str(err), "type": "invalid_request_error"}})
                return
            vectors = model.embed(texts, norm=True) if texts else []
            self.answer(200, {
                "object": "list",
                "model": request.get("model", MODEL),
                "data": [
                    {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                    for i, v in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            })

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"embeddings server ({MODEL}) on http://{args.host}:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
