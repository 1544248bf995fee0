"""Papers cited by more than one method's card (a method's own paper lives in its `__init__.py`)."""

from ovmlc.core.registry import Paper

CLIP = Paper(
    title="Learning Transferable Visual Models From Natural Language Supervision",
    authors=(
        "Alec Radford and Jong Wook Kim and Chris Hallacy and Aditya Ramesh and Gabriel Goh and Sandhini Agarwal and "
        "Girish Sastry and Amanda Askell and Pamela Mishkin and Jack Clark and Gretchen Krueger and Ilya Sutskever"
    ),
    venue="International Conference on Machine Learning (ICML)",
    year=2021,
    url="https://arxiv.org/abs/2103.00020",
    bibtex=(
        "@inproceedings{radford2021clip,\n"
        "  title = {Learning Transferable Visual Models From Natural Language Supervision},\n"
        "  author = {Alec Radford and Jong Wook Kim and Chris Hallacy and Aditya Ramesh and Gabriel Goh and "
        "Sandhini Agarwal and Girish Sastry and Amanda Askell and Pamela Mishkin and Jack Clark and Gretchen Krueger "
        "and Ilya Sutskever},\n"
        "  booktitle = {International Conference on Machine Learning (ICML)},\n"
        "  year = {2021},\n"
        "  eprint = {2103.00020},\n"
        "  archivePrefix = {arXiv}\n"
        "}"
    ),
)

MKT = Paper(
    title="Open-Vocabulary Multi-Label Classification via Multi-Modal Knowledge Transfer",
    authors="Sunan He and Taian Guo and Tao Dai and Ruizhi Qiao and Xiujun Shu and Bo Ren and Shu-Tao Xia",
    venue="AAAI Conference on Artificial Intelligence",
    year=2023,
    url="https://arxiv.org/abs/2207.01887",
    bibtex="""@inproceedings{he2023mkt,
  title = {Open-Vocabulary Multi-Label Classification via Multi-Modal Knowledge Transfer},
  author = {Sunan He and Taian Guo and Tao Dai and Ruizhi Qiao and Xiujun Shu and Bo Ren and Shu-Tao Xia},
  booktitle = {AAAI Conference on Artificial Intelligence},
  year = {2023},
  doi = {10.1609/aaai.v37i1.25159},
  eprint = {2207.01887},
  archivePrefix = {arXiv}
}""",
)

COOP = Paper(
    title="Learning to Prompt for Vision-Language Models",
    authors="Kaiyang Zhou and Jingkang Yang and Chen Change Loy and Ziwei Liu",
    venue="International Journal of Computer Vision (IJCV)",
    year=2022,
    url="https://arxiv.org/abs/2109.01134",
    bibtex=(
        "@article{zhou2022coop,\n"
        "  title = {Learning to Prompt for Vision-Language Models},\n"
        "  author = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},\n"
        "  journal = {International Journal of Computer Vision},\n"
        "  volume = {130},\n"
        "  number = {9},\n"
        "  pages = {2337--2348},\n"
        "  year = {2022},\n"
        "  doi = {10.1007/s11263-022-01653-1},\n"
        "  eprint = {2109.01134},\n"
        "  archivePrefix = {arXiv}\n"
        "}"
    ),
)

DUALCOOP = Paper(
    title="DualCoOp: Fast Adaptation to Multi-Label Recognition with Limited Annotations",
    authors="Ximeng Sun and Ping Hu and Kate Saenko",
    venue="Advances in Neural Information Processing Systems (NeurIPS)",
    year=2022,
    url="https://arxiv.org/abs/2206.09541",
    bibtex=(
        "@inproceedings{sun2022dualcoop,\n"
        "  title = {DualCoOp: Fast Adaptation to Multi-Label Recognition with Limited Annotations},\n"
        "  author = {Sun, Ximeng and Hu, Ping and Saenko, Kate},\n"
        "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},\n"
        "  year = {2022},\n"
        "  eprint = {2206.09541},\n"
        "  archivePrefix = {arXiv}\n"
        "}"
    ),
)

__all__ = ["CLIP", "COOP", "DUALCOOP", "MKT"]
