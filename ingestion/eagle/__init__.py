"""The EAGLE protocol: the gateway client, the payload decoders, the record types, the simulator."""
