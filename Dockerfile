# GPU image for training: docker build -t corrmatch . && docker run --gpus all --ipc=host \
#   -v /path/to/data:/workspace/corrmatch/data corrmatch fit --config configs/pascal/corrmatch.yaml --data.split 92
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

WORKDIR /workspace/corrmatch
COPY pyproject.toml README.md ./
COPY corrmatch ./corrmatch
RUN pip install --no-cache-dir .
COPY configs ./configs
COPY train.py ./

ENV WANDB_MODE=offline
ENTRYPOINT ["python", "train.py"]
CMD ["fit", "--config", "configs/demo.yaml"]
