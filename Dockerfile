FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
COPY optimizers optimizers
COPY study study
COPY workers workers
COPY dashboard dashboard
COPY examples examples
RUN uv sync --frozen --no-dev && ln -s /app/.venv/bin/* /usr/local/bin/ 2>/dev/null || true
ENV PATH="/app/.venv/bin:$PATH"
