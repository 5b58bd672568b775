"""Fixture responses shaped like the real archive APIs (EMPIAR REST, EMDB v3 header XML, RCSB FASTA)."""

from __future__ import annotations

import json

EMPIAR_10028 = {
    "EMPIAR-10028": {
        "empiar_id": "EMPIAR-10028",
        "title": "Plasmodium falciparum 80S ribosome bound to the anti-protozoan drug emetine",
        "release_date": "2014-06-10",
        "experiment_type": "SPA",
        "cross_references": [{"name": "EMD-2660"}],
        "imagesets": [
            {
                "name": "Movies of Plasmodium falciparum 80S ribosomes",
                "directory": "/data/Micrographs",
                "category": "micrographs - multiframe",
                "header_format": "MRCS",
                "data_format": "MRCS",
                "num_images_or_tilt_series": 1081,
                "frames_per_image": 16,
                "voxel_type": "UNSIGNED BYTE",
                "pixel_width": 1.34,
                "pixel_height": 1.34,
                "details": "",
                "image_width": 4096,
                "image_height": 4096,
            },
            {
                "name": "Polished particles",
                "directory": "/data/Particles",
                "category": "picked particles - single frame - processed",
                "header_format": "MRCS",
                "data_format": "MRCS",
                "num_images_or_tilt_series": 105247,
                "frames_per_image": 1,
                "voxel_type": "32 BIT FLOAT",
                "pixel_width": 1.34,
                "pixel_height": 1.34,
                "details": "",
                "image_width": 360,
                "image_height": 360,
            },
        ],
        "citation": [{"title": "Cryo-EM structure of the Plasmodium falciparum 80S ribosome bound to the anti-protozoan drug emetine"}],
    }
}

EMD_2660_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<emd emdb_id="EMD-2660" version="3.0.0.0">
  <admin><title>Cryo-EM structure of the Plasmodium falciparum 80S ribosome bound to emetine</title></admin>
  <crossreferences>
    <citation_list><primary_citation><journal_citation published="true">
      <title>Cryo-EM structure of the Plasmodium falciparum 80S ribosome bound to the anti-protozoan drug emetine</title>
    </journal_citation></primary_citation></citation_list>
    <pdb_list><pdb_reference><pdb_id>3j79</pdb_id></pdb_reference>
              <pdb_reference><pdb_id>3j7a</pdb_id></pdb_reference></pdb_list>
  </crossreferences>
  <sample><name>Plasmodium falciparum 80S ribosome</name>
    <supramolecule_list><complex_supramolecule>
      <molecular_weight><theoretical units="MDa">3.2</theoretical></molecular_weight>
    </complex_supramolecule></supramolecule_list>
  </sample>
  <structure_determination_list><structure_determination>
    <method>singleParticle</method>
    <microscopy_list><single_particle_microscopy>
      <acceleration_voltage units="kV">300</acceleration_voltage>
      <nominal_cs units="mm">2.0</nominal_cs>
      <image_recording_list><image_recording>
        <average_electron_dose_per_image units="e/A**2">20</average_electron_dose_per_image>
      </image_recording></image_recording_list>
    </single_particle_microscopy></microscopy_list>
    <singleparticle_processing>
      <final_reconstruction>
        <applied_symmetry><point_group>C1</point_group></applied_symmetry>
        <resolution units="A" res_type="BY AUTHOR">3.2</resolution>
        <software_list><software><name>RELION</name><version>1.3</version></software></software_list>
      </final_reconstruction>
    </singleparticle_processing>
  </structure_determination>
  </structure_determination_list>
  <map format="CCP4" size_kbytes="110592">
    <file>emd_2660.map.gz</file>
    <dimensions><col>300</col><row>300</row><sec>300</sec></dimensions>
    <pixel_spacing><x units="A">1.34</x><y units="A">1.34</y><z units="A">1.34</z></pixel_spacing>
  </map>
</emd>
"""

FASTA_3J79 = """>3J79_1|Chain A|28S ribosomal RNA fragment|Plasmodium falciparum 3D7 (36329)
ACGUACGUAC
GGAUCC
>3J79_2|Chains B, C[auth X]|Ribosomal protein L2|Plasmodium falciparum 3D7 (36329)
MAKLVSTKAGHRVEVNIPEKGKL
"""

FASTA_3J7A = """>3J7A_1|Chain A|18S ribosomal RNA|Plasmodium falciparum 3D7 (36329)
GGCCAAUU
"""

DIR_INDEX = """<html><head><title>Index of /empiar/world_availability/10028/data/</title></head><body>
<a href="../">Parent Directory</a>
<a href="?C=N;O=D">Name</a>
<a href="Micrographs/">Micrographs/</a>
<a href="gain_ref.mrc">gain_ref.mrc</a>
<a href="README.txt">README.txt</a>
</body></html>"""

MICS_INDEX = """<html><body><a href="../">Parent Directory</a>
<a href="001.mrcs">001.mrcs</a><a href="002.mrcs">002.mrcs</a><a href="003.mrcs">003.mrcs</a>
<a href="notes%20file.txt">notes file.txt</a></body></html>"""


def empiar_json() -> bytes:
    return json.dumps(EMPIAR_10028).encode()
