"""Wire formats: one module per API, each translating both ways between its JSON and gateway.chat"""
